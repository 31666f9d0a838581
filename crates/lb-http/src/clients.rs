//! The per-client-address cap on concurrent proxied requests: one address
//! must not be able to hold every upstream connection of a backend. One
//! table per listener, kept across reloads; an address has an entry only
//! while it has requests in flight.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::conn::ConnInfo;
use crate::plan::ListenerPlan;
use crate::record::Record;

/// Shards of the table: requests from different addresses rarely wait on
/// one lock.
const SHARDS: usize = 32;

/// A client address with its keyed hash, worked out once per connection:
/// a request's permit then hashes nothing (the table's keyed hash keeps
/// it safe from addresses chosen to collide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientKey {
    ip: IpAddr,
    hash: u64,
}

impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands the map the hash a [`ClientKey`] already carries.
#[derive(Debug, Default)]
struct Carried(u64);

impl Hasher for Carried {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<ClientKey, u32, BuildHasherDefault<Carried>>;

/// Requests in flight per client address on one listener.
#[derive(Debug)]
pub(crate) struct ClientTable {
    hasher: std::collections::hash_map::RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

impl ClientTable {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            hasher: Default::default(),
            shards: std::array::from_fn(|_| Mutex::default()),
        })
    }

    /// The key of client address `ip`.
    pub(crate) fn key(&self, ip: IpAddr) -> ClientKey {
        // An IPv4 client on a dual-stack socket is one client either way.
        let ip = ip.to_canonical();
        ClientKey {
            ip,
            hash: self.hasher.hash_one(ip),
        }
    }

    fn shard(&self, key: &ClientKey) -> &Mutex<Shard> {
        // Bits the map does not use to place entries (it takes the low
        // ones), so one shard's keys still spread over its buckets.
        let i = usize::try_from((key.hash >> 32) % SHARDS as u64).unwrap_or_default();
        // `i` is below SHARDS, so the first shard is never the fallback.
        self.shards.get(i).unwrap_or_else(|| {
            let [first, ..] = &self.shards;
            first
        })
    }

    /// A permit for one more request from `key`'s address, if it has
    /// fewer than `cap`.
    pub(crate) fn acquire(self: &Arc<Self>, key: ClientKey, cap: u32) -> Option<ClientPermit> {
        let mut shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = shard.entry(key).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(ClientPermit {
            table: Arc::clone(self),
            key,
        })
    }

    /// Requests in flight from `ip`.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> u32 {
        let key = self.key(ip);
        let shard = self
            .shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.get(&key).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// One request counted against its client address until dropped.
#[derive(Debug)]
pub(crate) struct ClientPermit {
    table: Arc<ClientTable>,
    key: ClientKey,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut shard = self
            .table
            .shard(&self.key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = shard.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

const TOO_MANY: &str = "too many concurrent requests from this client address";

/// Admit a request to be proxied under the listener's per-client cap: the
/// permit is held by `record` until the response ends; `Err` is the 429 to
/// answer with.
pub(crate) fn admit(
    plan: &ListenerPlan,
    conn: &ConnInfo,
    record: &mut Record,
) -> Result<(), Box<Response<ProxyBody>>> {
    let Some(cap) = plan.http.clients.max_requests_per_client else {
        return Ok(());
    };
    match conn.clients.acquire(conn.client, cap) {
        Some(permit) => {
            record.hold(permit);
            Ok(())
        }
        None => {
            plan.metrics.cuts.too_many_requests.inc();
            record.fail(TOO_MANY);
            let mut res = crate::proxy::status_response(StatusCode::TOO_MANY_REQUESTS, TOO_MANY);
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(Box::new(res))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_per_address_and_entries_go_at_zero() {
        let table = ClientTable::new();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| table.acquire(table.key(a), 3).unwrap())
            .collect();
        assert!(table.acquire(table.key(a), 3).is_none());
        let other = table.acquire(table.key(b), 3).unwrap();
        assert_eq!(table.count(a), 3);
        drop(held);
        assert_eq!(table.count(a), 0);
        assert_eq!(table.entries(), 1);
        drop(other);
        assert_eq!(table.entries(), 0);
    }

    #[test]
    fn mapped_ipv4_is_the_same_client() {
        let table = ClientTable::new();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let _p = table.acquire(table.key(v4), 1).unwrap();
        assert!(table.acquire(table.key(mapped), 1).is_none());
    }
}

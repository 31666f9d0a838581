//! The per-client-address cap on concurrent proxied requests: one address
//! must not be able to hold every upstream connection of a backend. One
//! table per listener, kept across reloads; an address has an entry only
//! while it has requests in flight.

use std::collections::HashMap;
use std::hash::BuildHasher;
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

/// Requests in flight per client address on one listener.
#[derive(Debug)]
pub(crate) struct ClientTable {
    hasher: std::collections::hash_map::RandomState,
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

impl ClientTable {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            hasher: Default::default(),
            shards: std::array::from_fn(|_| Mutex::default()),
        })
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let i = usize::try_from(self.hasher.hash_one(ip) % SHARDS as u64).unwrap_or_default();
        // `i` is below SHARDS, so the first shard is never the fallback.
        self.shards.get(i).unwrap_or_else(|| {
            let [first, ..] = &self.shards;
            first
        })
    }

    /// A permit for one more request from `ip`, if it has fewer than `cap`.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr, cap: u32) -> Option<ClientPermit> {
        // An IPv4 client on a dual-stack socket is one client either way.
        let ip = ip.to_canonical();
        let mut shard = self
            .shard(&ip)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = shard.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(ClientPermit {
            table: Arc::clone(self),
            ip,
        })
    }

    /// Requests in flight from `ip`.
    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> u32 {
        let shard = self
            .shard(&ip)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.get(&ip).copied().unwrap_or(0)
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
    ip: IpAddr,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut shard = self
            .table
            .shard(&self.ip)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = shard.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&self.ip);
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
    match conn.clients.acquire(conn.peer.ip(), cap) {
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
        let held: Vec<_> = (0..3).map(|_| table.acquire(a, 3).unwrap()).collect();
        assert!(table.acquire(a, 3).is_none());
        let other = table.acquire(b, 3).unwrap();
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
        let _p = table.acquire(v4, 1).unwrap();
        assert!(table.acquire(mapped, 1).is_none());
    }
}

//! The retry budget of a cluster: retries may add at most a percentage of
//! the cluster's recent requests, plus a small reserve so a quiet cluster
//! can still retry. A cluster whose backends all fail therefore cannot
//! multiply its own load (the retry storm a fixed retry count causes).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::now_micros;

/// How far back requests and retries count, in one-second buckets.
const WINDOW_SECONDS: u64 = 10;
/// Retries always allowed per second of the window, whatever the request
/// count, as linkerd's `min_retries_per_second`: a quiet cluster with one
/// dead backend still retries around it.
const RETRY_RESERVE_PER_SECOND: u64 = 10;
/// Retries always allowed per window.
const RETRY_RESERVE: u64 = RETRY_RESERVE_PER_SECOND * WINDOW_SECONDS;

#[derive(Debug, Default)]
struct Bucket {
    /// The second (from 1) this bucket counts; 0 = unused.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Requests and retries over the last [`WINDOW_SECONDS`].
#[derive(Debug, Default)]
pub struct RetryBudget {
    buckets: [Bucket; WINDOW_SECONDS as usize],
}

impl RetryBudget {
    /// Count one request (a first try).
    pub fn record_request(&self) {
        if let Some(b) = self.current() {
            b.requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether one more retry fits in `percent` of the requests of the last
    /// ten seconds plus the reserve; counts it when it does. Concurrent callers may overshoot by
    /// a retry or two: the budget bounds a storm, not a single request.
    pub fn try_retry(&self, percent: u32) -> bool {
        let now = second_now();
        let (mut requests, mut retries) = (0, 0);
        for b in &self.buckets {
            let s = b.second.load(Ordering::Acquire);
            if s != 0 && s + WINDOW_SECONDS > now {
                requests += b.requests.load(Ordering::Relaxed);
                retries += b.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = RETRY_RESERVE + requests * u64::from(percent) / 100;
        if retries >= allowed {
            return false;
        }
        if let Some(b) = self.current() {
            b.retries.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// This second's bucket, reset if it last counted an older second.
    fn current(&self) -> Option<&Bucket> {
        let now = second_now();
        let bucket = self.buckets.get((now % WINDOW_SECONDS) as usize)?;
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != now
            && bucket
                .second
                .compare_exchange(seen, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        Some(bucket)
    }
}

fn second_now() -> u64 {
    now_micros() / 1_000_000 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_requests_plus_the_reserve() {
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.record_request();
        }
        let allowed = (0..1000).filter(|_| budget.try_retry(20)).count() as u64;
        // Requests recorded across a second boundary still all count.
        assert_eq!(allowed, RETRY_RESERVE + 20);
    }

    #[test]
    fn zero_percent_leaves_the_reserve() {
        let budget = RetryBudget::default();
        budget.record_request();
        let allowed = (0..100).filter(|_| budget.try_retry(0)).count() as u64;
        assert_eq!(allowed, RETRY_RESERVE);
    }
}

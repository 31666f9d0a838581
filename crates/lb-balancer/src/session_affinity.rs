//! Sticky sessions. A request pinned to a usable backend (by the session
//! cookie the gateway sets, see `lb_core::StickyCookie`) goes there; a
//! request with a hash key (header, source address, ...) goes where a
//! Maglev table sends that key, so it sticks without a cookie; anything
//! else, including a request whose pinned backend is unhealthy or drained,
//! goes to the least loaded backend (and the front then pins it there).

use std::sync::atomic::AtomicUsize;

use lb_core::{Candidates, PickContext, Policy};

use crate::least::least;
use crate::maglev::Maglev;

/// `session_affinity`.
#[derive(Debug)]
pub struct SessionAffinity {
    table: Maglev,
    next: AtomicUsize,
}

impl SessionAffinity {
    /// Affinity over `backends`, hashing keys through a Maglev table of
    /// `table_size` slots.
    pub fn new(backends: &[lb_config::Backend], table_size: usize) -> Self {
        Self {
            table: Maglev::new(backends, table_size),
            next: AtomicUsize::new(0),
        }
    }
}

impl Policy for SessionAffinity {
    fn pick(&self, c: &Candidates<'_>, ctx: &PickContext) -> Option<usize> {
        if let Some(pinned) = ctx.pinned.filter(|&i| c.usable(i)) {
            return Some(pinned);
        }
        if let Some(key) = ctx.key {
            return self.table.lookup(c, key);
        }
        least(c, &self.next, |b| &b.state.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use lb_core::PickContext;

    use crate::test_support::*;

    #[test]
    fn pinned_backend_wins_until_it_is_unusable() {
        let cluster = cluster_with("session_affinity", &[1, 1, 1], "hash_key = \"cookie:sid\"");
        let pinned = PickContext {
            pinned: Some(2),
            ..ctx(None)
        };
        for _ in 0..10 {
            assert_eq!(cluster.pick(&pinned, None).unwrap().0, 2);
        }
        cluster.set_healthy(2, false);
        let fallback = cluster.pick(&pinned, None).unwrap().0;
        assert_ne!(fallback, 2);
    }

    #[test]
    fn hash_keys_stick_without_a_cookie() {
        let cluster = cluster_with(
            "session_affinity",
            &[1, 1, 1],
            "hash_key = \"header:x-user\"",
        );
        for key in 0..100u64 {
            let first = cluster.pick(&ctx(Some(key)), None).unwrap().0;
            for _ in 0..3 {
                assert_eq!(cluster.pick(&ctx(Some(key)), None).unwrap().0, first);
            }
        }
    }
}

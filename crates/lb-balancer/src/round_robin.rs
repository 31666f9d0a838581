//! Round robin: each usable backend in turn; weights other than 0 are not
//! used.

use std::sync::atomic::{AtomicUsize, Ordering};

use lb_core::{Candidates, PickContext, Policy};

use crate::first_usable;

/// Plain round robin.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
        if c.is_empty() {
            return None;
        }
        // The cursor moves to just after the backend picked (not by one),
        // so a run of unusable backends does not hand their turns to the
        // backend after them.
        let mut start = self.next.load(Ordering::Relaxed);
        loop {
            let i = first_usable(c, start % c.len())?;
            match self.next.compare_exchange_weak(
                start,
                i + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(i),
                Err(now) => start = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    #[test]
    fn cycles_and_skips_drained() {
        let cluster = cluster("round_robin", &[1, 0, 1]);
        let picks = picks(&cluster, 4);
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn exclude_falls_back_only_when_alone() {
        let two = cluster("round_robin", &[1, 1]);
        for _ in 0..4 {
            assert_eq!(pick_excluding(&two, 0), Some(1));
        }
        let one = cluster("round_robin", &[1]);
        assert_eq!(pick_excluding(&one, 0), Some(0));
        assert_eq!(pick(&cluster("round_robin", &[0])), None);
    }
}

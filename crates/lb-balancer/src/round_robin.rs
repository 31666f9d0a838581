//! Round robin: each usable backend in turn, weights other than 0 ignored.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lb_core::{Backend, PickContext, Policy};

/// Plain round robin. Backends of weight 0 are drained and skipped.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        _ctx: &PickContext,
        exclude: Option<usize>,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let usable = |i: usize| backends.get(i).is_some_and(|b| b.spec.weight > 0);
        let mut fallback = None;
        for k in 0..n {
            let i = start.wrapping_add(k) % n;
            if !usable(i) {
                continue;
            }
            if Some(i) == exclude {
                fallback = Some(i);
                continue;
            }
            return Some(i);
        }
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(Backend::new(lb_config::Backend {
                    address: format!("127.0.0.1:{}", 9000 + i),
                    resolved: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                    protocol: lb_config::BackendProtocol::H1,
                    weight: *w,
                }))
            })
            .collect()
    }

    fn ctx() -> PickContext {
        PickContext {
            client: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn cycles_and_skips_drained() {
        let b = backends(&[1, 0, 1]);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..4).map(|_| rr.pick(&b, &ctx(), None).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2);
    }

    #[test]
    fn exclude_falls_back_only_when_alone() {
        let b = backends(&[1, 1]);
        let rr = RoundRobin::default();
        for _ in 0..4 {
            assert_eq!(rr.pick(&b, &ctx(), Some(0)), Some(1));
        }
        let one = backends(&[1]);
        assert_eq!(rr.pick(&one, &ctx(), Some(0)), Some(0));
        assert_eq!(rr.pick(&backends(&[0]), &ctx(), None), None);
    }
}

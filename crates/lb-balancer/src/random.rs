//! Random choices: uniform, and in proportion to weight.

use lb_core::{Candidates, PickContext, Policy};

use crate::random_usable;

/// A uniformly random usable backend; weights other than 0 are not used.
#[derive(Debug, Default)]
pub struct Random;

impl Policy for Random {
    fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
        random_usable(c)
    }
}

/// A random usable backend, each with probability weight ÷ total weight of
/// the usable ones.
#[derive(Debug)]
pub struct WeightedRandom {
    /// Running sums of the configured weights: `cumulative[i]` is the sum
    /// of the weights of backends `0..=i`.
    cumulative: Vec<u64>,
}

impl WeightedRandom {
    /// Prefix sums of `backends`' weights.
    pub fn new(backends: &[lb_config::Backend]) -> Self {
        let cumulative = backends
            .iter()
            .scan(0u64, |sum, b| {
                *sum += u64::from(b.weight);
                Some(*sum)
            })
            .collect();
        Self { cumulative }
    }
}

impl Policy for WeightedRandom {
    fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
        // Fast path: draw over every configured weight, O(log n); redrawing
        // after a miss keeps the usable backends' exact proportions.
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total > 0 {
            for _ in 0..crate::DRAWS {
                let r = fastrand::u64(..total);
                let i = self.cumulative.partition_point(|&sum| sum <= r);
                if c.usable(i) {
                    return Some(i);
                }
            }
        }
        // Every draw missed: draw over the usable weights only.
        let usable: u64 = (0..c.len())
            .filter(|&i| c.usable(i))
            .map(|i| u64::from(c.weight(i)))
            .sum();
        if usable == 0 {
            return None;
        }
        let mut r = fastrand::u64(..usable);
        for i in (0..c.len()).filter(|&i| c.usable(i)) {
            let w = u64::from(c.weight(i));
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    /// Six standard deviations of a binomial count: a correct policy
    /// fails this about once in 500 million runs.
    fn within_six_sigma(count: usize, n: usize, p: f64) -> bool {
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        (count as f64 - mean).abs() <= 6.0 * sigma
    }

    #[test]
    fn random_is_uniform_over_usable_backends() {
        let cluster = cluster("random", &[1, 5, 0, 1]);
        let c = counts(&cluster, &picks(&cluster, 30_000));
        assert_eq!(c[2], 0);
        for i in [0, 1, 3] {
            assert!(within_six_sigma(c[i], 30_000, 1.0 / 3.0), "{c:?}");
        }
    }

    #[test]
    fn weighted_random_follows_weights_and_skips_unhealthy() {
        let cluster = cluster("weighted_random", &[1, 3, 4]);
        let c = counts(&cluster, &picks(&cluster, 40_000));
        for (i, p) in [(0, 1.0 / 8.0), (1, 3.0 / 8.0), (2, 4.0 / 8.0)] {
            assert!(within_six_sigma(c[i], 40_000, p), "{c:?}");
        }
        cluster.set_healthy(2, false);
        let c = counts(&cluster, &picks(&cluster, 40_000));
        assert_eq!(c[2], 0);
        assert!(within_six_sigma(c[0], 40_000, 0.25), "{c:?}");
    }
}

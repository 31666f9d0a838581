//! Smooth weighted round robin, as nginx does it: every pick adds each
//! usable backend's weight to its running score, takes the highest score
//! and subtracts the total from it. Over any run of `sum(weights)` picks
//! each backend gets exactly its weight, interleaved rather than in bursts
//! (weights 1:3 give B A B B, not A B B B).

use std::sync::Mutex;

use lb_core::{Candidates, PickContext, Policy};

/// Smooth weighted round robin.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    scores: Mutex<Vec<i64>>,
}

impl WeightedRoundRobin {
    /// Scores for `backends` backends, all at zero.
    pub fn new(backends: usize) -> Self {
        Self {
            scores: Mutex::new(vec![0; backends]),
        }
    }
}

impl Policy for WeightedRoundRobin {
    fn pick(&self, c: &Candidates<'_>, _ctx: &PickContext) -> Option<usize> {
        // A poisoned lock only means another pick panicked mid-update; the
        // scores are still plain integers.
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, score) in scores.iter_mut().enumerate().take(c.len()) {
            if !c.usable(i) {
                continue;
            }
            let w = i64::from(c.weight(i));
            *score += w;
            total += w;
            if best.is_none_or(|(_, s)| *score > s) {
                best = Some((i, *score));
            }
        }
        let (i, _) = best?;
        if let Some(score) = scores.get_mut(i) {
            *score -= total;
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    #[test]
    fn one_to_three_is_exact_in_every_window_of_four() {
        let cluster = cluster("weighted_round_robin", &[1, 3]);
        let picks = picks(&cluster, 400);
        for window in picks.windows(4) {
            assert_eq!(window.iter().filter(|&&i| i == 0).count(), 1, "{picks:?}");
        }
        assert_eq!(&picks[..4], &[1, 0, 1, 1]);
    }

    #[test]
    fn heavy_weights_interleave() {
        let cluster = cluster("weighted_round_robin", &[5, 1, 1]);
        let picks = picks(&cluster, 7);
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }
}

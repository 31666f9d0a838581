//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weight-aware as
//! in Envoy: each backend fills lookup-table slots along its own
//! permutation of the table, a heavier backend taking turns more often.
//! The table depends only on the backends' addresses and weights, so
//! every gateway with the same configuration maps a key to the same
//! backend, and removing one of N backends moves about 1/N of the keys.
//!
//! Health does not rebuild the table: a lookup that lands on an unusable
//! backend walks on to the next slots, which belong to backends in
//! permutation order, so only that backend's keys move, spread over the
//! others.

use lb_core::hash::stable_hash_seeded;
use lb_core::{Candidates, PickContext, Policy};

/// Seeds of the two hashes that give each backend its permutation.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_0001;
const SKIP_SEED: u64 = 0x6d61_676c_6576_0002;

/// A Maglev lookup table.
#[derive(Debug)]
pub struct Maglev {
    /// Backend index of each slot; empty when no backend has weight.
    table: Vec<u32>,
}

impl Maglev {
    /// The table of `size` slots (a prime) for `backends`; weight-0
    /// backends get no slot.
    pub fn new(backends: &[lb_config::Backend], size: usize) -> Self {
        Self {
            table: build(backends, size),
        }
    }

    /// The table: each slot's backend, as an index into the backends it
    /// was built from; empty when none has weight. The XDP path writes it
    /// into the kernel as it is, so kernel and userspace pick alike.
    pub fn slots(&self) -> &[u32] {
        &self.table
    }

    /// The usable backend for `key`: its slot's backend, else the next
    /// slots' in order.
    pub(crate) fn lookup(&self, c: &Candidates<'_>, key: u64) -> Option<usize> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let start = (key % m as u64) as usize;
        let (tail, head) = (self.table.get(start..)?, self.table.get(..start)?);
        tail.iter()
            .chain(head)
            .map(|&i| i as usize)
            .find(|&i| c.usable(i))
    }
}

impl Policy for Maglev {
    fn pick(&self, c: &Candidates<'_>, ctx: &PickContext) -> Option<usize> {
        // No key in the request: spread such requests over the table.
        let key = ctx.key.unwrap_or_else(|| fastrand::u64(..));
        self.lookup(c, key)
    }
}

/// A backend filling the table.
struct Filler {
    index: u32,
    weight: u64,
    offset: u64,
    skip: u64,
    /// Position reached along the permutation.
    next: u64,
    /// Turn threshold: the backend takes a slot in iteration `k` when
    /// `k * weight >= target`, then raises it by the largest weight, so the
    /// heaviest backend fills every iteration and one of a third of its
    /// weight every third.
    target: u64,
}

fn build(backends: &[lb_config::Backend], size: usize) -> Vec<u32> {
    let m = size as u64;
    if m < 2 {
        return Vec::new();
    }
    let max_weight = backends
        .iter()
        .map(|b| u64::from(b.weight))
        .max()
        .unwrap_or(0);
    let mut fillers: Vec<Filler> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.weight > 0)
        .filter_map(|(i, b)| {
            let name = b.address.as_bytes();
            Some(Filler {
                index: u32::try_from(i).ok()?,
                weight: u64::from(b.weight),
                offset: stable_hash_seeded(OFFSET_SEED, name) % m,
                skip: stable_hash_seeded(SKIP_SEED, name) % (m - 1) + 1,
                next: 0,
                target: max_weight,
            })
        })
        .collect();
    if fillers.is_empty() {
        return Vec::new();
    }
    // Fill in address order, so reordering the backends in the file does
    // not change the table.
    fillers.sort_by(|a, b| {
        let name = |f: &Filler| backends.get(f.index as usize).map(|b| b.address.as_str());
        name(a).cmp(&name(b)).then(a.index.cmp(&b.index))
    });
    let mut table: Vec<Option<u32>> = vec![None; size];
    let mut filled = 0;
    let mut iteration = 1u64;
    while filled < size {
        for f in fillers.iter_mut() {
            if filled == size {
                break;
            }
            if iteration * f.weight < f.target {
                continue;
            }
            f.target += max_weight;
            // A permutation of a prime-sized table visits every slot, so
            // a free one is always found while the table is not full.
            loop {
                let slot = ((f.offset + f.next * f.skip) % m) as usize;
                f.next += 1;
                if let Some(entry @ None) = table.get_mut(slot) {
                    *entry = Some(f.index);
                    filled += 1;
                    break;
                }
            }
        }
        iteration += 1;
    }
    table.into_iter().map(|e| e.unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    fn specs(weights: &[u32]) -> Vec<lb_config::Backend> {
        cluster("maglev", weights).spec.backends
    }

    fn shares(table: &[u32], n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for &i in table {
            counts[i as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / table.len() as f64)
            .collect()
    }

    #[test]
    fn slots_follow_weights() {
        let table = build(&specs(&[1, 2, 0, 1]), 65_537);
        let s = shares(&table, 4);
        for (got, want) in s.iter().zip([0.25, 0.5, 0.0, 0.25]) {
            assert!((got - want).abs() < 0.01, "{s:?}");
        }
    }

    #[test]
    fn the_order_of_the_backends_does_not_matter() {
        let forward = specs(&[1, 2, 3]);
        let mut backward = forward.clone();
        backward.reverse();
        let a = build(&forward, 65_537);
        let b = build(&backward, 65_537);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(forward[*x as usize].address, backward[*y as usize].address);
        }
    }

    #[test]
    fn removing_one_of_four_moves_about_a_quarter() {
        let all = specs(&[1, 1, 1, 1]);
        let before = build(&all, 65_537);
        let after = build(&all[..3], 65_537);
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let share = moved as f64 / before.len() as f64;
        assert!((0.24..0.30).contains(&share), "{share}");
    }

    #[test]
    fn same_key_same_backend_and_unhealthy_keys_move_alone() {
        let cluster = cluster("maglev", &[1, 1, 1, 1]);
        let keys: Vec<u64> = (0..2_000)
            .map(|k| lb_core::hash::stable_hash(&[k as u8, (k >> 8) as u8]))
            .collect();
        let first: Vec<_> = keys
            .iter()
            .map(|&k| cluster.pick(&ctx(Some(k)), None).unwrap().0)
            .collect();
        let again: Vec<_> = keys
            .iter()
            .map(|&k| cluster.pick(&ctx(Some(k)), None).unwrap().0)
            .collect();
        assert_eq!(first, again);
        cluster.set_healthy(3, false);
        for (&k, &was) in keys.iter().zip(&first) {
            let now = cluster.pick(&ctx(Some(k)), None).unwrap().0;
            if was != 3 {
                assert_eq!(now, was, "a healthy backend's key moved");
            } else {
                assert_ne!(now, 3);
            }
        }
    }
}

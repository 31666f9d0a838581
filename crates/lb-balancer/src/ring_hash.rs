//! A consistent hash ring (Karger et al.; ketama): each backend places
//! `ring_size × weight` points on a 64-bit ring by hashing its address,
//! and a key belongs to the first point at or after its hash. Points per
//! backend depend on nothing but its own address and weight, so removing
//! one of N backends moves exactly that backend's keys (about 1/N), and
//! every gateway with the same configuration builds the same ring.
//!
//! Health does not rebuild the ring: a key whose point belongs to an
//! unusable backend walks on to the next points.

use lb_core::hash::stable_hash_seeded;
use lb_core::{Candidates, PickContext, Policy};

const POINT_SEED: u64 = 0x7269_6e67_6861_7368;

/// A hash ring.
#[derive(Debug)]
pub struct RingHash {
    /// `(point, backend index)`, sorted by point.
    points: Vec<(u64, u32)>,
}

impl RingHash {
    /// The ring of `backends` with `per_weight` points per unit of weight.
    pub fn new(backends: &[lb_config::Backend], per_weight: usize) -> Self {
        let mut points = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let Ok(index) = u32::try_from(i) else { break };
            let count = per_weight.saturating_mul(b.weight as usize);
            let mut name = b.address.clone().into_bytes();
            name.push(b'#');
            let base = name.len();
            for j in 0..count {
                name.truncate(base);
                name.extend_from_slice(j.to_string().as_bytes());
                points.push((stable_hash_seeded(POINT_SEED, &name), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }
}

impl Policy for RingHash {
    fn pick(&self, c: &Candidates<'_>, ctx: &PickContext) -> Option<usize> {
        let key = ctx.key.unwrap_or_else(|| fastrand::u64(..));
        let start = self.points.partition_point(|&(p, _)| p < key);
        let (tail, head) = (self.points.get(start..)?, self.points.get(..start)?);
        tail.iter()
            .chain(head)
            .map(|&(_, i)| i as usize)
            .find(|&i| c.usable(i))
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    fn owners(cluster: &lb_core::Cluster, keys: &[u64]) -> Vec<u64> {
        keys.iter()
            .map(|&k| {
                let (_, b) = cluster.pick(&ctx(Some(k)), None).unwrap();
                b.spec.resolved.port() as u64
            })
            .collect()
    }

    #[test]
    fn removal_moves_only_the_removed_backends_keys() {
        let keys: Vec<u64> = (0..10_000u32)
            .map(|k| lb_core::hash::stable_hash(&k.to_le_bytes()))
            .collect();
        let four = owners(&cluster("ring_hash", &[1, 1, 1, 1]), &keys);
        let three = owners(&cluster("ring_hash", &[1, 1, 1]), &keys);
        let removed = 10_003;
        let mut moved = 0;
        for (a, b) in four.iter().zip(&three) {
            if a != b {
                assert_eq!(*a, removed, "a key moved between remaining backends");
                moved += 1;
            }
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.20..0.30).contains(&share), "{share}");
    }

    #[test]
    fn weight_two_gets_about_twice_the_keys() {
        let cluster = cluster("ring_hash", &[1, 2]);
        let keys: Vec<u64> = (0..20_000u32)
            .map(|k| lb_core::hash::stable_hash(&k.to_le_bytes()))
            .collect();
        let picks: Vec<usize> = keys
            .iter()
            .map(|&k| cluster.pick(&ctx(Some(k)), None).unwrap().0)
            .collect();
        let c = counts(&cluster, &picks);
        let share = c[1] as f64 / keys.len() as f64;
        assert!((0.58..0.75).contains(&share), "{c:?}");
    }
}

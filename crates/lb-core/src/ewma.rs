//! Peak EWMA (as Finagle and linkerd do it): a slower sample replaces the
//! average at once, faster ones pull it down with a weight that depends on
//! the time since the last sample, and the value read decays while no
//! sample arrives, so a backend that was slow is tried again eventually.
//!
//! Value and time stamp share one atomic word (an `f32` of microseconds and
//! a wrapping `u32` of milliseconds), so updates are lock-free.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::now_micros;

/// Time constant of the decay: information this old weighs 1/e.
const DECAY_MS: f64 = 10_000.0;

/// A lock-free peak EWMA of latency.
#[derive(Debug, Default)]
pub struct Ewma(AtomicU64);

fn now_ms() -> u32 {
    // Wrapping by design: only differences of stamps are used.
    (now_micros() / 1_000) as u32
}

fn unpack(word: u64) -> (f64, u32) {
    (f64::from(f32::from_bits((word >> 32) as u32)), word as u32)
}

fn pack(value: f64, stamp: u32) -> u64 {
    (u64::from((value as f32).to_bits()) << 32) | u64::from(stamp)
}

fn weight(since: u32, now: u32) -> f64 {
    (-f64::from(now.wrapping_sub(since)) / DECAY_MS).exp()
}

impl Ewma {
    /// Add one sample.
    pub fn observe(&self, sample: Duration) {
        let sample = sample.as_secs_f64() * 1e6;
        let now = now_ms();
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (value, stamp) = unpack(word);
                let next = if word == 0 || sample > value {
                    sample
                } else {
                    let w = weight(stamp, now);
                    value * w + sample * (1.0 - w)
                };
                Some(pack(next, now))
            });
    }

    /// The current estimate in microseconds; 0 before any sample.
    pub fn micros(&self) -> f64 {
        let word = self.0.load(Ordering::Acquire);
        if word == 0 {
            return 0.0;
        }
        let (value, stamp) = unpack(word);
        value * weight(stamp, now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_jump_and_fast_samples_pull_down_slowly() {
        let e = Ewma::default();
        assert_eq!(e.micros(), 0.0);
        e.observe(Duration::from_millis(1));
        assert!((e.micros() - 1_000.0).abs() < 50.0);
        e.observe(Duration::from_millis(50));
        assert!((e.micros() - 50_000.0).abs() < 2_500.0, "{}", e.micros());
        e.observe(Duration::from_millis(1));
        assert!(
            e.micros() > 40_000.0,
            "one fast sample does not erase a peak"
        );
    }
}

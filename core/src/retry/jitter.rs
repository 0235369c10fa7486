//! Injected, seedable randomness for jitter. The core owns no random number generator of its
//! own: the seed comes from the caller, so the same seed gives the same timeline.

use std::fmt::Debug;

/// A source of random 64-bit values for jitter.
pub trait Jitter: Debug + Send {
    /// The next value, uniformly distributed over `u64`.
    fn next_u64(&mut self) -> u64;
}

/// A small seeded generator (SplitMix64): fast, statistically good enough for jitter, and
/// entirely determined by its seed. Not for anything security-related.
#[derive(Clone, Debug)]
pub struct SeededJitter {
    state: u64,
}

impl SeededJitter {
    /// A generator that always yields the same sequence for the same seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl Jitter for SeededJitter {
    fn next_u64(&mut self) -> u64 {
        // SplitMix64 (Steele, Lea and Flood, 2014), the reference constants.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// No randomness: always the top of the range, so every jittered delay equals its upper bound.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn next_u64(&mut self) -> u64 {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_yields_the_same_sequence_and_another_seed_another() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut j = SeededJitter::new(1);
                move |_| j.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut j = SeededJitter::new(1);
                move |_| j.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut j = SeededJitter::new(2);
                move |_| j.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn splitmix_matches_its_reference_output_for_seed_zero() {
        // First output of SplitMix64 seeded with 0, from the reference implementation.
        assert_eq!(SeededJitter::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }
}
